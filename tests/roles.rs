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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_bus::EventLog;
use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog};
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_e2e::{RoleProcess, migrate_keyspace, put_warehouse, required};
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::{ScyllaBackend, ScyllaConfig};

const SKUS: usize = 12;
const STOCK: i64 = 60;
const PARTITIONS: u32 = 4;
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 30;

/// What the acknowledged commands did to one key.
#[derive(Debug, Default, Clone, Copy)]
struct Expected {
    on_hand: i64,
    /// Units held by reservations that neither expire nor end during the test.
    held: i64,
}

/// Sends a command until its outcome is definite: a 503 (or a lost connection) means
/// "unknown, retry with the same key", as the API promises.
async fn command(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> u16 {
    for _ in 0..50 {
        let mut request = client
            .post(format!("{base}{path}"))
            .header("idempotency-key", key);
        if let Some(body) = &body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(r) if r.status().as_u16() != 503 => return r.status().as_u16(),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{path} with key {key} never got a definite answer");
}

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
            TestBus::Fluvio(endpoint) => vec![
                ("STOCKFLOW_BUS", "fluvio".into()),
                ("STOCKFLOW_FLUVIO_ENDPOINT", endpoint.clone()),
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
    let env: Vec<(String, String)> = [
        ("STOCKFLOW_SCYLLA_NODES", nodes.clone()),
        ("STOCKFLOW_SCYLLA_KEYSPACE", keyspace.clone()),
        ("STOCKFLOW_REGION", region.clone()),
        ("STOCKFLOW_PARTITIONS", PARTITIONS.to_string()),
        ("STOCKFLOW_OUTBOX_SCAN_MS", "100".into()),
    ]
    .into_iter()
    .chain(bus.env())
    .map(|(k, v)| (k.to_string(), v))
    .collect();

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
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for s in 0..SKUS {
        let sku = format!("K{s}");
        let status = command(
            &client,
            &bases[s % 2],
            "/v1/adjustments",
            &format!("init-{sku}"),
            Some(json!({"sku": sku, "location": "dc", "set_on_hand": STOCK, "reason": "cycle_count"})),
        )
        .await;
        assert_eq!(status, 200);
        expected.insert(
            sku,
            Expected {
                on_hand: STOCK,
                held: 0,
            },
        );
    }

    // The load: adjustments, long reservations (some confirmed, some released) and
    // one-second reservations that expire, from many clients across both command APIs.
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let bases = bases.clone();
        let done = done.clone();
        load.push(tokio::spawn(async move {
            let mut effects: BTreeMap<String, Expected> = BTreeMap::new();
            let mut open: Vec<(String, String)> = Vec::new();
            for op in 0..OPS_PER_CLIENT {
                let base = &bases[(c + op) % 2];
                let sku = format!("K{}", (c * 7 + op) % SKUS);
                let key = format!("c{c}-op{op}");
                let line = json!([{"sku": sku, "location": "dc", "qty": 1}]);
                match op % 5 {
                    0 => {
                        let body =
                            json!({"sku": sku, "location": "dc", "delta": 2, "reason": "receipt"});
                        if command(&client, base, "/v1/adjustments", &key, Some(body)).await == 200
                        {
                            effects.entry(sku).or_default().on_hand += 2;
                        }
                    }
                    1 | 4 => {
                        let id = format!("long-{c}-{op}");
                        let body =
                            json!({"reservation_id": id, "lines": line, "ttl_seconds": 3600});
                        match command(&client, base, "/v1/reservations", &key, Some(body)).await {
                            201 => {
                                effects.entry(sku.clone()).or_default().held += 1;
                                open.push((id, sku));
                            }
                            409 => {}
                            other => panic!("reserve answered {other}"),
                        }
                    }
                    2 => {
                        if let Some((id, sku)) = open.pop() {
                            let path = format!("/v1/reservations/{id}/confirm");
                            assert_eq!(command(&client, base, &path, &key, None).await, 200);
                            let e = effects.entry(sku).or_default();
                            e.held -= 1;
                            e.on_hand -= 1;
                        }
                    }
                    _ => {
                        if op % 2 == 0
                            && let Some((id, sku)) = open.pop()
                        {
                            let path = format!("/v1/reservations/{id}/release");
                            assert_eq!(command(&client, base, &path, &key, None).await, 200);
                            effects.entry(sku).or_default().held -= 1;
                        } else {
                            let body = json!({"lines": line, "ttl_seconds": 1});
                            let status =
                                command(&client, base, "/v1/reservations", &key, Some(body)).await;
                            assert!(
                                matches!(status, 201 | 409),
                                "short reserve answered {status}"
                            );
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            effects
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

    for task in load {
        for (sku, e) in task.await.expect("a client task") {
            let slot = expected.entry(sku).or_default();
            slot.on_hand += e.on_hand;
            slot.held += e.held;
        }
    }

    // The write model holds exactly what was acknowledged, once the one-second
    // reservations have expired.
    let config = ScyllaConfig::new(nodes.split(',').map(str::to_string).collect(), keyspace);
    let write = ScyllaBackend::open(&config)
        .await
        .expect("the keyspace opens");
    let deadline = Instant::now() + Duration::from_secs(60);
    let levels = loop {
        let levels = write.write.all_stock_levels().await.unwrap();
        let settled = levels.iter().all(|l| {
            expected
                .get(l.sku.as_str())
                .is_some_and(|e| l.reserved == e.held)
        });
        if settled && levels.len() == SKUS {
            break levels;
        }
        assert!(
            Instant::now() < deadline,
            "short reservations did not expire: {levels:?} vs {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for level in &levels {
        let e = expected[level.sku.as_str()];
        assert_eq!(
            (level.on_hand, level.reserved),
            (e.on_hand, e.held),
            "{}: the write model is every acknowledged command, once",
            level.sku
        );
    }

    // The read model, served by the query API, converges on the write model.
    let deadline = Instant::now() + Duration::from_secs(60);
    for level in &levels {
        loop {
            let r = client
                .get(format!("{}/v1/stock/{}/dc", query.base(), level.sku))
                .send()
                .await
                .unwrap();
            let body: Value = if r.status().is_success() {
                r.json().await.unwrap()
            } else {
                Value::Null
            };
            let read = (
                body["on_hand"].as_i64(),
                body["reserved"].as_i64(),
                body["version"].as_u64(),
            );
            if read
                == (
                    Some(level.on_hand),
                    Some(level.reserved),
                    Some(level.version),
                )
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: read model {read:?} never reached the write model {level:?}",
                level.sku
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every version of every key is on the topic, and in order within its partition
    // (redeliveries after the kills repeat versions already seen, never go back).
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut records = 0u64;
    for p in 0..PARTITIONS {
        let end = log.end_offset(p).await.unwrap();
        let mut next = 0;
        while next < end {
            let batch = log
                .fetch(p, next, 1 << 20, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(!batch.is_empty(), "partition {p} ends before {end}");
            for record in batch {
                assert_eq!(record.offset, next);
                next += 1;
                let event: Value = serde_json::from_slice(&record.value).unwrap();
                if event["stream"] != "stock" {
                    continue;
                }
                records += 1;
                let sku = event["sku"].as_str().unwrap().to_string();
                let version = event["version"].as_u64().unwrap();
                let versions = seen.entry(sku.clone()).or_default();
                let newest = versions.last().copied().unwrap_or(0);
                assert!(
                    version <= newest || version == newest + 1,
                    "{sku}: version {version} follows {newest} on partition {p}"
                );
                if version > newest {
                    versions.push(version);
                }
            }
        }
    }
    for level in &levels {
        assert_eq!(
            seen.get(level.sku.as_str()).map(Vec::len),
            Some(usize::try_from(level.version).unwrap()),
            "{}: versions 1..={} on the topic",
            level.sku,
            level.version
        );
    }

    let versions: usize = seen.values().map(Vec::len).sum();
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
