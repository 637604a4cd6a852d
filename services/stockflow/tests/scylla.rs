//! The platform on a real CQL server (Cassandra 5 in CI, standing in for ScyllaDB): the
//! HTTP contract, oversell, publisher crash recovery and bad configuration.
//!
//! Needs `STOCKFLOW_CQL_NODES`; skipped with a message otherwise. `scripts/test.sh`
//! starts Cassandra and sets it.

mod common;

use std::sync::Arc;

use common::{Platform, problem};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use stockflow::app::{self, AppConfig, StoreConfig};
use stockflow::workers::projector::{self, ProjectorConfig, Step};
use stockflow::workers::publisher;
use stockflow_bus::{EventLog, NewRecord};
use stockflow_domain::{
    Adjust, AdjustReason, Command, LocationId, LocationKind, OnHandChange, Region, Sku, StockKey,
};
use stockflow_storage::embedded::{SqliteEventLog, WalPolicy};
use stockflow_storage::ports::{CommandRequest, Outbox, ReadStore, WriteStore};
use stockflow_storage::scylla::{self, Replication, ScyllaBackend, ScyllaConfig};

fn nodes(test: &str) -> Vec<String> {
    let nodes = std::env::var("STOCKFLOW_CQL_NODES")
        .unwrap_or_else(|_| panic!("{test}: STOCKFLOW_CQL_NODES is unset: run ./scripts/test.sh, which starts Cassandra and sets it"));
    nodes.split(',').map(str::to_string).collect()
}

fn keyspace(test: &str) -> String {
    format!("h_{test}_{}", std::process::id())
}

fn store(nodes: Vec<String>, keyspace: &str) -> StoreConfig {
    StoreConfig::Scylla {
        config: ScyllaConfig::new(nodes, keyspace),
        create: Some((
            Replication::NetworkTopology(vec![("datacenter1".into(), 1)]),
            None,
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_reservations_on_cassandra_never_oversell() {
    let nodes = nodes("oversell");
    let p = Platform::start_with(store(nodes, &keyspace("oversell"))).await;
    p.location("s1", "north").await;
    p.stock("HOT", "s1", 50).await;
    let responses = join_all((0..200).map(|i| {
        p.post(
            "/v1/reservations",
            format!("cas-oversell-{i}"),
            json!({"lines": [{"sku": "HOT", "location": "s1", "qty": 1}], "ttl_seconds": 900}),
        )
    }))
    .await;
    let mut created = 0;
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let (_, body) = problem(r).await;
                assert_eq!(body["code"], "insufficient_stock", "{body}");
            }
            // Heavy contention on one Paxos partition can time out: retryable, not applied
            // as far as the client knows, and never an oversell.
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    let key = StockKey::new(Sku::parse("HOT").unwrap(), LocationId::parse("s1").unwrap());
    let level = p
        .running
        .backend
        .write
        .stock_level(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        level.reserved, created,
        "reserved equals the acknowledged reservations"
    );
    assert_eq!(created, 50, "all stock sold, none twice");
    let row = p
        .eventually_stock("HOT", "s1", |v| v["version"] == level.version)
        .await;
    assert_eq!(row["reserved"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_contract_holds_on_cassandra() {
    let nodes = nodes("contract");
    let p = Platform::start_with(store(nodes, &keyspace("contract"))).await;
    p.location("s1", "north").await;
    p.location("w1", "south").await;
    p.stock("A", "s1", 5).await;
    p.stock("A", "w1", 7).await;
    // Idempotent replay and key reuse.
    let body = json!({"sku": "A", "location": "s1", "delta": 2, "reason": "receipt"});
    let first = p.post("/v1/adjustments", "cq-1", body.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = p.post("/v1/adjustments", "cq-1", body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (status, _) = problem(
        p.post(
            "/v1/adjustments",
            "cq-1",
            json!({"sku": "A", "location": "s1", "delta": 3, "reason": "receipt"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Multi-line reservation across partitions: all or nothing, then confirm.
    let (status, body) = problem(
        p.post("/v1/reservations", "cq-2", json!({"lines": [{"sku": "A", "location": "s1", "qty": 2}, {"sku": "A", "location": "w1", "qty": 8}], "ttl_seconds": 60}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_stock"))
    );
    let r = p
        .post("/v1/reservations", "cq-3", json!({"reservation_id": "o-1", "lines": [{"sku": "A", "location": "s1", "qty": 2}, {"sku": "A", "location": "w1", "qty": 7}], "ttl_seconds": 60}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = p
        .post("/v1/reservations/o-1/confirm", "cq-4", json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (status, body) = problem(
        p.post("/v1/reservations/o-1/release", "cq-5", json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("reservation_not_active"))
    );
    let row = p.eventually_stock("A", "w1", |v| v["version"] == 3).await;
    assert_eq!(
        (row["on_hand"].as_i64(), row["reserved"].as_i64()),
        (Some(0), Some(0))
    );
    let a: serde_json::Value = p.get("/v1/availability/A").await.json().await.unwrap();
    assert_eq!(a["total_available"], 5);
    // Expiry through the deadline table.
    let r = p.post("/v1/reservations", "cq-6", json!({"reservation_id": "o-2", "lines": [{"sku": "A", "location": "s1", "qty": 1}], "ttl_seconds": 1})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let started = std::time::Instant::now();
    loop {
        let got: serde_json::Value = p.get("/v1/reservations/o-2").await.json().await.unwrap();
        if got["status"] == "expired" {
            break;
        }
        // Generous: other tests hammer the same server with contended Paxos rounds.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{got}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(p.get("/readyz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_crash_between_publishing_and_marking_re_delivers_harmlessly() {
    let nodes = nodes("publisher");
    let ks = keyspace("publisher");
    let config = ScyllaConfig::new(nodes, ks.clone());
    let session = scylla::connect(&config).await.unwrap();
    scylla::migrate(
        &session,
        &ks,
        &Replication::NetworkTopology(vec![("datacenter1".into(), 1)]),
        None,
    )
    .await
    .unwrap();
    let b = ScyllaBackend::open(&config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SqliteEventLog::open(&dir.path().join("log.db"), 2, WalPolicy::default()).unwrap(),
    );
    b.write
        .put_location(stockflow_domain::Location {
            id: LocationId::parse("s1").unwrap(),
            region: Region::parse("north").unwrap(),
            kind: LocationKind::Store,
            name: "S1".into(),
        })
        .await
        .unwrap()
        .unwrap();
    for i in 1..=5 {
        let key = StockKey::new(
            Sku::parse(format!("P{}", i % 2)).unwrap(),
            LocationId::parse("s1").unwrap(),
        );
        let cmd = Adjust::new(
            key,
            OnHandChange::Delta(i),
            AdjustReason::Receipt,
            None,
            None,
        )
        .unwrap();
        b.write
            .execute(CommandRequest {
                command: Command::Adjust(cmd),
                idempotency: None,
                trace_context: None,
                actor: None,
                grant: stockflow_domain::LocationGrant::Any,
            })
            .await
            .unwrap()
            .answer
            .expect("applied");
    }
    // The publisher appends, then dies before marking.
    let pending = b.write.pending(100).await.unwrap();
    assert_eq!(pending.len(), 5);
    log.append(
        pending
            .iter()
            .map(|e| NewRecord::new(e.key.clone(), e.payload.clone()))
            .collect(),
    )
    .await
    .unwrap();
    // Restarted, it publishes the same entries again and marks them.
    assert_eq!(
        publisher::publish_batch(
            &*b.write,
            &*log,
            &(0..b.write.shards()).collect(),
            &publisher::PublisherConfig {
                batch: 100,
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        5
    );
    assert_eq!(b.write.backlog().await.unwrap(), 0);
    let mut records = 0;
    for p in 0..2 {
        records += log.end_offset(p).await.unwrap();
    }
    assert_eq!(records, 10, "every event was delivered twice");
    // The read models are unchanged by the duplicates.
    let pc = ProjectorConfig::default();
    for p in 0..2 {
        let mut next = 0;
        while let Step::Advanced(to) =
            projector::step(&*log, &*b.read, &pc, p, next, std::time::Duration::ZERO)
                .await
                .unwrap()
        {
            next = to;
        }
    }
    let write = b.write.all_stock_levels().await.unwrap();
    let read = b.read.all_inventory().await.unwrap();
    assert_eq!(write.len(), 2);
    for (w, r) in write.iter().zip(&read) {
        assert_eq!(
            (w.sku.as_str(), w.on_hand, w.version),
            (r.sku.as_str(), r.on_hand, r.version)
        );
    }
    assert_eq!(read.iter().map(|r| r.on_hand).sum::<i64>(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_clearly() {
    let nodes = nodes("badconfig");
    let dir = tempfile::tempdir().unwrap();
    let start = |store: StoreConfig| {
        let mut config = AppConfig::new(dir.path().to_path_buf());
        config.store = store;
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            app::start(config, listener)
                .await
                .err()
                .map(|e| e.to_string())
        }
    };
    // Nothing listens on port 1.
    let mut unreachable = ScyllaConfig::new(vec!["127.0.0.1:1".into()], "stockflow");
    unreachable.connect_timeout = std::time::Duration::from_secs(2);
    let err = start(StoreConfig::Scylla {
        config: unreachable,
        create: None,
    })
    .await
    .expect("refused");
    assert!(
        err.contains("cannot connect") || err.contains("no answer"),
        "{err}"
    );
    // A keyspace nobody created.
    let err = start(StoreConfig::Scylla {
        config: ScyllaConfig::new(nodes.clone(), "nobody_made_this"),
        create: None,
    })
    .await
    .expect("refused");
    assert!(
        err.contains("does not exist") && err.contains("migrate"),
        "{err}"
    );
    // A name that cannot be a keyspace.
    let err = start(StoreConfig::Scylla {
        config: ScyllaConfig::new(nodes.clone(), "Bad-Name"),
        create: None,
    })
    .await
    .expect("refused");
    assert!(err.contains("keyspace"), "{err}");
    // A keyspace at another schema version: refused at start-up, and /readyz fails when it
    // changes under a running process.
    let ks = keyspace("badconfig");
    let p = Platform::start_with(store(nodes.clone(), &ks)).await;
    assert_eq!(p.get("/readyz").await.status(), StatusCode::OK);
    let session = scylla::connect(&ScyllaConfig::new(nodes.clone(), ks.clone()))
        .await
        .unwrap();
    // The next build's migration, additive and admitting this build (a rolling upgrade):
    // this process stays ready and keeps taking commands.
    session
        .query_unpaged(
            format!("UPDATE {ks}.schema_version SET version = ?, readers_from = ? WHERE name = 'stockflow'"),
            (stockflow_storage::scylla::SCHEMA_VERSION + 1, stockflow_storage::scylla::SCHEMA_VERSION),
        )
        .await
        .unwrap();
    assert_eq!(p.get("/readyz").await.status(), StatusCode::OK);
    p.location("mixed", "north").await;
    p.stock("MIXED-1", "mixed", 4).await;
    // A schema that does not admit this build (or says nothing): not ready.
    session
        .query_unpaged(
            format!("UPDATE {ks}.schema_version SET version = 99, readers_from = null WHERE name = 'stockflow'"),
            (),
        )
        .await
        .unwrap();
    let r = p.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("schema version 99"));
    let err = start(StoreConfig::Scylla {
        config: ScyllaConfig::new(nodes, ks),
        create: None,
    })
    .await
    .expect("refused");
    assert!(err.contains("schema version 99"), "{err}");
}
