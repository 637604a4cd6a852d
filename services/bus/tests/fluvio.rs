//! The Fluvio adapter against a real cluster. No package registry ships Fluvio's server,
//! so these run only where one is reachable: set `FLUVIO_ENDPOINT` (e.g. 127.0.0.1:9003)
//! and the test command runs them (`cargo test -p stockflow-bus --test fluvio -- --ignored`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog, delete_topic, ensure_topic};
use stockflow_bus::kafka::TopicState;
use stockflow_bus::{BusError, EventLog, contract};

fn endpoint() -> String {
    std::env::var("FLUVIO_ENDPOINT")
        .expect("FLUVIO_ENDPOINT is unset: these tests need a running Fluvio cluster")
}

fn config(partitions: u32) -> FluvioConfig {
    let topic = format!("contract-{}", uuid::Uuid::now_v7().simple());
    FluvioConfig::new(endpoint(), topic, partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn fluvio_passes_the_event_log_contract() {
    let c = config(4);
    let log = FluvioEventLog::connect(c.clone()).await.unwrap();
    contract::event_log_contract(Arc::new(log)).await;
    delete_topic(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn small_fetches_over_a_large_backlog_skip_nothing() {
    // Each stream fetch asks for ~6 records' worth: the 0.50.1 client then drops the rest
    // of every larger batch, which the adapter must notice and re-read.
    let mut c = config(2);
    c.max_fetch_bytes = 600;
    let log = FluvioEventLog::connect(c.clone()).await.unwrap();
    contract::a_large_backlog_arrives_whole_in_small_fetches(&log).await;
    delete_topic(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn the_topic_is_created_once_and_its_partition_count_is_checked() {
    let mut c = config(3);
    assert_eq!(ensure_topic(&c).await.unwrap(), TopicState::Created);
    assert_eq!(ensure_topic(&c).await.unwrap(), TopicState::Existed);
    let log = FluvioEventLog::connect(c.clone()).await.unwrap();
    log.check_ready().await.unwrap();
    c.partitions = 5;
    match FluvioEventLog::connect(c.clone()).await {
        Err(BusError::Config(message)) => {
            assert!(message.contains("has 3 partitions, not 5"), "{message}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a topic with another partition count was accepted"),
    }
    c.partitions = 3;
    delete_topic(&c).await.unwrap();
    delete_topic(&c).await.unwrap();
    c.create_topic = false;
    match FluvioEventLog::connect(c.clone()).await {
        Err(BusError::Config(message)) => assert!(message.contains("does not exist"), "{message}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing topic was accepted with creation off"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn an_unreachable_cluster_fails_at_start_up_with_the_address() {
    endpoint();
    let mut c = FluvioConfig::new("127.0.0.1:1".into(), "nowhere".into(), 2);
    c.request_timeout = Duration::from_secs(3);
    match FluvioEventLog::connect(c).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1"), "{message}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}
