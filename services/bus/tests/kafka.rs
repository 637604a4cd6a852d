//! The Kafka adapter against a real broker (`scripts/kafka.sh`, started by the test
//! command): the event-log contract, topic creation and the start-up errors a wrong
//! configuration must give.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog, TopicState, delete_topic, ensure_topic};
use stockflow_bus::{BusError, EventLog, contract};

/// The broker of the test command. These tests are the Kafka adapter's only proof, so a
/// missing broker fails them instead of skipping.
fn brokers() -> Vec<String> {
    let brokers = std::env::var("STOCKFLOW_KAFKA_BROKERS").expect(
        "STOCKFLOW_KAFKA_BROKERS is unset: run ./scripts/test.sh, or start a broker with \
         `scripts/kafka.sh up` and set STOCKFLOW_KAFKA_BROKERS=127.0.0.1:9092",
    );
    brokers.split(',').map(str::to_string).collect()
}

fn config(partitions: u32) -> KafkaConfig {
    let topic = format!("contract-{}", uuid::Uuid::now_v7().simple());
    KafkaConfig::new(brokers(), topic, partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_passes_the_event_log_contract() {
    let log = KafkaEventLog::connect(config(4)).await.unwrap();
    contract::event_log_contract(Arc::new(log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_created_once_and_its_partition_count_is_checked() {
    let mut c = config(3);
    assert_eq!(ensure_topic(&c).await.unwrap(), TopicState::Created);
    assert_eq!(ensure_topic(&c).await.unwrap(), TopicState::Existed);
    let log = KafkaEventLog::connect(c.clone()).await.unwrap();
    assert_eq!(log.partitions(), 3);
    log.check_ready().await.unwrap();

    c.partitions = 5;
    match KafkaEventLog::connect(c.clone()).await {
        Err(
            e @ BusError::PartitionCountMismatch {
                found: 3,
                expected: 5,
                ..
            },
        ) => {
            assert!(e.to_string().contains("has 3 partitions, not 5"), "{e}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a topic with another partition count was accepted"),
    }

    c.partitions = 3;
    delete_topic(&c).await.unwrap();
    delete_topic(&c).await.unwrap();
    c.create_topic = false;
    match KafkaEventLog::connect(c.clone()).await {
        Err(e @ BusError::TopicMissing { .. }) => {
            let message = e.to_string();
            assert!(message.contains("does not exist"), "{message}");
            assert!(message.contains(&c.topic), "{message}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing topic was accepted with creation off"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_fail_at_start_up_with_the_address() {
    // Touch the real broker first so this test, too, fails loudly without one.
    brokers();
    let mut c = KafkaConfig::new(vec!["127.0.0.1:1".into()], "nowhere".into(), 2);
    c.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    match KafkaEventLog::connect(c).await {
        Err(e @ BusError::Kafka { .. }) => {
            assert!(e.retryable(), "{e}");
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
