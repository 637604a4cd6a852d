//! The Fluvio adapter against a real cluster. No package registry ships Fluvio's server,
//! so these run only where one is reachable: set `FLUVIO_ENDPOINT` (e.g. 127.0.0.1:9003)
//! and the test command runs them (`cargo test -p stockflow-bus --test fluvio -- --ignored`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog, delete_topic, ensure_topic};
use stockflow_bus::kafka::TopicState;
use stockflow_bus::{BusError, EventLog, NewRecord, contract};

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
async fn the_smallest_fetches_over_a_large_backlog_skip_nothing() {
    // A backlog of ~2 MB in 16 KiB batches, read with the smallest fetch the adapter
    // allows: a fetch that ends in the middle of a batch loses the batch's rest in the 0.50.1
    // client; the adapter must notice and re-read from the first missing offset, and every
    // record must arrive once, in order.
    let mut c = config(1);
    c.max_fetch_bytes = 1;
    let log = FluvioEventLog::connect(c.clone()).await.unwrap();
    let records: Vec<NewRecord> = (0..4000)
        .map(|i| {
            NewRecord::new(
                "backlog",
                format!("{i:06}-{}", "y".repeat(500)).into_bytes(),
            )
        })
        .collect();
    for chunk in records.chunks(500) {
        log.append(chunk.to_vec()).await.unwrap();
    }
    assert_eq!(log.end_offset(0).await.unwrap(), 4000);
    let mut next = 0u64;
    let mut fetches = 0;
    while next < 4000 {
        fetches += 1;
        assert!(fetches < 10_000, "no progress at offset {next}");
        let batch = log
            .fetch(0, next, usize::MAX, Duration::from_secs(5))
            .await
            .unwrap();
        for r in batch {
            assert_eq!(r.offset, next, "contiguous");
            assert_eq!(r.value, records[usize::try_from(next).unwrap()].value);
            next += 1;
        }
    }
    eprintln!(
        "{fetches} fetches, {} client skips noticed and re-read",
        log.skips_recovered()
    );
    // Against Fluvio 0.18.1 with client 0.50.1 nearly every fetch here skips; a client
    // with fluvio-community/fluvio#4627 fixed would not, and this check would say so.
    assert!(
        log.skips_recovered() > 0,
        "the small fetches exercised the client's skip"
    );
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
    match FluvioEventLog::connect(c.clone()).await {
        Err(e @ BusError::TopicMissing { .. }) => {
            assert!(e.to_string().contains("does not exist"), "{e}")
        }
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
        Err(e) if e.retryable() => assert!(e.to_string().contains("127.0.0.1:1"), "{e}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}
