//! The region's four roles as separate OS processes over Cassandra (standing in for
//! ScyllaDB) and a Kafka broker: two command APIs, a query API, two publishers and two
//! projectors. A mixed load runs from many clients while one publisher and one projector
//! are killed with SIGKILL and restarted. At the end every acknowledged command is in the
//! write model exactly once, every key's read model equals its write model, and every
//! version of every key is on the topic, in order.
//!
//! Needs `STOCKFLOW_CQL_NODES` and `STOCKFLOW_KAFKA_BROKERS` (the test command sets both);
//! fails without them. The same region runs on Fluvio where `FLUVIO_ENDPOINT` names a
//! cluster (no registry ships Fluvio's server, so CI has none).

// A test: a failed call is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stockflow_bus::EventLog;
use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog};
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_e2e::mixed_load::{LoadClient, finish, region_holds_exactly, stock_keys};
use stockflow_e2e::{RoleProcess, migrate_keyspace, put_warehouse, region_env, required};

const SKUS: usize = 12;
const STOCK: i64 = 60;
const PARTITIONS: u32 = 4;
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 30;

/// The bus a region runs on.
enum TestBus {
    /// Kafka bootstrap brokers.
    Kafka(String),
    /// A Fluvio SC endpoint.
    Fluvio(String),
}

impl TestBus {
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            TestBus::Kafka(brokers) => vec![
                ("STOCKFLOW_BUS", "kafka".into()),
                ("STOCKFLOW_KAFKA_BROKERS", brokers.clone()),
            ],
            // Structured CloudEvents, so the region converges on what a new region writes.
            TestBus::Fluvio(endpoint) => vec![
                ("STOCKFLOW_BUS", "fluvio".into()),
                ("STOCKFLOW_FLUVIO_ENDPOINT", endpoint.clone()),
                ("STOCKFLOW_FLUVIO_CLOUDEVENTS", "structured".into()),
            ],
        }
    }

    /// Creates the topic, as the operator does, and opens it for reading.
    async fn create_topic(&self, topic: &str) -> Arc<dyn EventLog> {
        match self {
            TestBus::Kafka(brokers) => Arc::new(
                KafkaEventLog::connect(KafkaConfig::new(
                    brokers.split(',').map(str::to_string).collect(),
                    topic.into(),
                    PARTITIONS,
                ))
                .await
                .expect("the Kafka topic is created"),
            ),
            TestBus::Fluvio(endpoint) => Arc::new(
                FluvioEventLog::connect(FluvioConfig::new(
                    endpoint.clone(),
                    topic.into(),
                    PARTITIONS,
                ))
                .await
                .expect("the Fluvio topic is created"),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_roles_on_kafka_survive_sigkill_and_converge_exactly() {
    region_survives_sigkill_and_converges(TestBus::Kafka(required("STOCKFLOW_KAFKA_BROKERS")))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn four_roles_on_fluvio_survive_sigkill_and_converge_exactly() {
    region_survives_sigkill_and_converges(TestBus::Fluvio(required("FLUVIO_ENDPOINT"))).await;
}

#[allow(clippy::too_many_lines)]
async fn region_survives_sigkill_and_converges(bus: TestBus) {
    let nodes = required("STOCKFLOW_CQL_NODES");
    let run = std::process::id();
    let keyspace = format!("roles_{run}");
    let region = format!("roles{run}");
    migrate_keyspace(&nodes, &keyspace);
    let workdir = tempfile::tempdir().expect("a working directory");
    let env = region_env((&nodes, &keyspace), &region, PARTITIONS, bus.env());

    // The roles never create the topic (the operator does): a projector started before
    // it exists stops at once, naming it.
    let early = RoleProcess::spawn("projector", &env, workdir.path());
    let status = early.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "a projector without its topic must not start"
    );
    let log = bus
        .create_topic(&stockflow_bus::default_topic(&region))
        .await;

    let commands = [
        RoleProcess::start("command-api", &env, workdir.path()).await,
        RoleProcess::start("command-api", &env, workdir.path()).await,
    ];
    let query = RoleProcess::start("query-api", &env, workdir.path()).await;
    let mut publishers = vec![
        RoleProcess::start("publisher", &env, workdir.path()).await,
        RoleProcess::start("publisher", &env, workdir.path()).await,
    ];
    let mut projectors = vec![
        RoleProcess::start("projector", &env, workdir.path()).await,
        RoleProcess::start("projector", &env, workdir.path()).await,
    ];
    let client = reqwest::Client::new();
    let bases: Vec<String> = commands.iter().map(RoleProcess::base).collect();

    // Each role serves only its own routes.
    let r = client
        .get(format!("{}/v1/stock/X", bases[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the command API serves no queries");
    let r = client
        .post(format!("{}/v1/adjustments", query.base()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the query API takes no commands");

    put_warehouse(&client, &bases[0], "dc", "north").await;
    let mut expected = stock_keys(&client, &bases[0], SKUS, STOCK).await;

    // The mixed load from many clients across both command APIs.
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let bases = bases.clone();
        let done = done.clone();
        load.push(tokio::spawn(async move {
            let mut me = LoadClient::new(c, SKUS);
            for op in 0..OPS_PER_CLIENT {
                me.next(&client, &bases[(c + op) % 2], None).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
            me
        }));
    }

    // Midway, SIGKILL one replica of each worker role and start a new one.
    let total = CLIENTS * OPS_PER_CLIENT;
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < total / 3 {
        assert!(Instant::now() < deadline, "the load does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publishers.remove(0).kill_hard();
    projectors.remove(0).kill_hard();
    tokio::time::sleep(Duration::from_millis(500)).await;
    publishers.push(RoleProcess::start("publisher", &env, workdir.path()).await);
    projectors.push(RoleProcess::start("projector", &env, workdir.path()).await);

    finish(load, &mut expected).await;

    // The write model holds exactly what was acknowledged, the read model served by the
    // query API converges on it, and every version of every key is on the topic in order.
    let (records, versions) = region_holds_exactly(
        (&nodes, &keyspace),
        &client,
        &query.base(),
        (log.as_ref(), PARTITIONS),
        &expected,
    )
    .await;
    eprintln!(
        "{total} client operations over {SKUS} keys; {records} stock events on the topic for {versions} versions ({} redelivered)",
        records - versions as u64
    );

    // Every replica is still ready, and each stops cleanly on SIGTERM.
    for p in commands
        .iter()
        .chain([&query])
        .chain(&publishers)
        .chain(&projectors)
    {
        p.wait_ready().await;
    }
    for p in publishers.into_iter().chain(projectors) {
        p.stop();
    }
    query.stop();
    for p in commands {
        p.stop();
    }
}
