//! The ScyllaDB adapters run the port contracts against a real CQL server (Cassandra 5 in
//! CI). They need `STOCKFLOW_CQL_NODES` (e.g. `127.0.0.1:9042`); without it they are
//! skipped with a message, and the README's test command always sets it.

use std::sync::Arc;

use super::*;
use crate::contract;

/// A fresh keyspace per test, so tests run in parallel without sharing state.
async fn backend(test: &str) -> Option<ScyllaBackend> {
    let Ok(nodes) = std::env::var("STOCKFLOW_CQL_NODES") else {
        eprintln!("skipping {test}: STOCKFLOW_CQL_NODES is not set (scripts/test.sh sets it)");
        return None;
    };
    let keyspace = format!("t_{}_{}", test, std::process::id());
    let config = ScyllaConfig::new(
        nodes.split(',').map(str::to_string).collect(),
        keyspace.clone(),
    );
    let session = connect(&config).await.expect("connect to the CQL server");
    let _ = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await;
    migrate(
        &session,
        &keyspace,
        &Replication::NetworkTopology(vec![("datacenter1".into(), 1)]),
        None,
    )
    .await
    .expect("migrate");
    Some(ScyllaBackend::open(&config).await.expect("open backend"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_write_store_honours_the_contract() {
    let Some(b) = backend("write").await else {
        return;
    };
    contract::write_store_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_write_store_never_oversells() {
    let Some(b) = backend("oversell").await else {
        return;
    };
    contract::write_store_concurrency_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_read_store_honours_the_contract() {
    let Some(b) = backend("read").await else {
        return;
    };
    contract::read_store_contract(b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_the_version_is_checked() {
    let Some(b) = backend("migrate").await else {
        return;
    };
    let _ = Arc::clone(&b.write);
    let nodes = std::env::var("STOCKFLOW_CQL_NODES").unwrap_or_default();
    let keyspace = format!("t_migrate_{}", std::process::id());
    let config = ScyllaConfig::new(vec![nodes], keyspace.clone());
    let session = connect(&config).await.unwrap();
    let replication = Replication::NetworkTopology(vec![("datacenter1".into(), 1)]);
    assert_eq!(
        migrate(&session, &keyspace, &replication, None)
            .await
            .unwrap(),
        SCHEMA_VERSION
    );
    check_schema(&session, &keyspace).await.unwrap();
    session
        .query_unpaged(
            format!("UPDATE {keyspace}.schema_version SET version = 99 WHERE name = 'stockflow'"),
            (),
        )
        .await
        .unwrap();
    let err = check_schema(&session, &keyspace)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema version 99"), "{err}");
    let err = check_schema(&session, "no_such_keyspace")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}
