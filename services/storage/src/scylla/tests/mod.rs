//! The ScyllaDB adapters run the port contracts against a real CQL server (Cassandra 5 in
//! CI). They need `STOCKFLOW_CQL_NODES` (e.g. `127.0.0.1:9042`), which the README's test
//! command sets; without it they fail.

use std::sync::Arc;

use super::*;
use crate::contract::{self, Exec};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{DeadlineRow, HeaderMove, HeaderWrite};
use crate::scylla::write::{deadlines, partition, saga};

/// A fresh keyspace per test, so tests run in parallel without sharing state.
async fn backend(test: &str) -> ScyllaBackend {
    backend_and_config(test).await.0
}

async fn backend_and_config(test: &str) -> (ScyllaBackend, ScyllaConfig) {
    let nodes = std::env::var("STOCKFLOW_CQL_NODES")
        .unwrap_or_else(|_| panic!("{test}: STOCKFLOW_CQL_NODES is unset: run ./scripts/test.sh, which starts Cassandra and sets it"));
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
    (
        ScyllaBackend::open(&config).await.expect("open backend"),
        config,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_write_store_honours_the_contract() {
    let b = backend("write").await;
    contract::write_store_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_write_store_never_oversells() {
    let b = backend("oversell").await;
    contract::write_store_concurrency_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scylla_write_stores_apply_each_command_once() {
    let (a, config) = backend_and_config("race").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    contract::write_store_race_contract(a.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_channels_never_overdraw_a_fence_or_a_cap_across_two_instances() {
    let (a, config) = backend_and_config("allocations").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    contract::allocation_race_contract(a.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_refusals_replay_under_their_key_from_any_instance() {
    let (a, config) = backend_and_config("refusal").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    contract::write_store_refusal_replay_contract(a.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_sagas_never_leave_holds_behind() {
    let b = backend("saga").await;
    contract::write_store_saga_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_tokens_act_only_at_their_locations() {
    let b = backend("grant").await;
    contract::write_store_location_grant_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_records_facts_below_zero_and_channels_see_zero() {
    let b = backend("facts").await;
    contract::records_facts_contract(b.write.clone(), b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_read_models_are_rebuilt_from_the_write_side_resuming_where_a_run_stopped() {
    let b = backend("rebuild").await;
    contract::rebuild_contract(b.write.clone(), b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_moves_counts_and_a_location_policy_keep_one_event_per_change() {
    let b = backend("states").await;
    contract::states_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_sku_policy_is_one_versioned_change_every_key_then_decides_under() {
    let b = backend("skupolicy").await;
    contract::sku_policy_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_webhook_store_honours_the_contract() {
    let b = backend("webhooks").await;
    contract::webhooks::run(&*b.webhooks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_import_store_honours_the_contract() {
    let b = backend("imports").await;
    contract::imports::run(&*b.imports).await;
    contract::imports::payloads(&*b.imports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scylla_write_stores_expire_a_burst_once_in_bounded_rounds() {
    let (a, config) = backend_and_config("expiry").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    contract::write_store_expiry_contract(a.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_read_store_honours_the_contract() {
    let b = backend("read").await;
    contract::read_store_contract(b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_change_feed_honours_the_contract_and_expires_old_cursors() {
    use crate::ports::{Changes, ReadStore};
    let b = backend("changes").await;
    contract::change_feed_contract(b.read.clone()).await;
    // Older than the table's TTL: expired.
    assert!(matches!(
        b.read
            .changes(&["s1".to_string()], Some("s@1000"), 10)
            .await
            .unwrap(),
        Changes::Expired
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_the_version_is_checked() {
    let b = backend("migrate").await;
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
    // Version 6: the deadline index drops its deletions after hours, by time window.
    let options = session
        .query_unpaged(
            "SELECT gc_grace_seconds, compaction FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'reservation_deadlines'",
            (keyspace.as_str(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (gc_grace, compaction): (i32, std::collections::HashMap<String, String>) =
        options.single_row().unwrap();
    assert_eq!(gc_grace, 10_800);
    assert!(
        compaction["class"].ends_with("TimeWindowCompactionStrategy"),
        "{compaction:?}"
    );
    // A newer schema (the next build's, mid-upgrade) runs this build if it admits it.
    let set = |version: i32, readers_from: Option<i32>| {
        let session = &session;
        let keyspace = &keyspace;
        async move {
            session
                .query_unpaged(
                    format!("UPDATE {keyspace}.schema_version SET version = ?, readers_from = ? WHERE name = 'stockflow'"),
                    (version, readers_from),
                )
                .await
                .unwrap();
            check_schema(session, keyspace)
                .await
                .map_err(|e| e.to_string())
        }
    };
    set(SCHEMA_VERSION + 1, Some(SCHEMA_VERSION)).await.unwrap();
    let err = set(SCHEMA_VERSION + 1, Some(SCHEMA_VERSION + 1))
        .await
        .unwrap_err();
    assert!(err.contains("run a newer build"), "{err}");
    let err = set(SCHEMA_VERSION - 1, None).await.unwrap_err();
    assert!(err.contains("run `stockflow migrate`"), "{err}");
    set(SCHEMA_VERSION, Some(SCHEMA_VERSION - 1)).await.unwrap();
    session
        .query_unpaged(
            format!("UPDATE {keyspace}.schema_version SET version = 99, readers_from = null WHERE name = 'stockflow'"),
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

/// TLS to the nodes (the test Cassandra takes TLS and plain clients on one port, with a
/// certificate from `scripts/tls.sh`'s CA): the right CA carries the whole backend, an
/// unrelated CA is refused at connection, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_nodes_ca_works_and_an_unknown_ca_is_refused() {
    let test = "tls";
    let tls = std::env::var("STOCKFLOW_TEST_TLS_DIR").unwrap_or_else(|_| {
        panic!("{test}: STOCKFLOW_TEST_TLS_DIR is unset: run ./scripts/test.sh, which starts Cassandra with client encryption")
    });
    let tls = std::path::Path::new(&tls);
    let (_, mut config) = backend_and_config(test).await;
    config.tls_ca_pem = Some(std::fs::read_to_string(tls.join("ca.pem")).expect("ca.pem"));
    let backend = ScyllaBackend::open(&config).await.expect("open over TLS");
    contract::write_store_contract(backend.write.clone()).await;

    config.tls_ca_pem = Some(std::fs::read_to_string(tls.join("other-ca.pem")).expect("pem"));
    config.connect_timeout = std::time::Duration::from_secs(3);
    let refused = connect(&config)
        .await
        .expect_err("an unknown CA is refused");
    let message = refused.to_string();
    assert!(
        message.contains("UnknownIssuer") || message.contains("certificate"),
        "{message}"
    );

    config.tls_ca_pem = Some("not a certificate".into());
    assert!(matches!(
        connect(&config).await,
        Err(crate::StoreError::Config { .. })
    ));
}

/// A publisher hands out the rows its own process committed without reading them back,
/// but only while they follow its cursor with no gap: a row another writer slipped in
/// between (behind this process's marker, which that writer did not write again) is read,
/// and everything is published in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_another_writer_between_this_process_rows_are_published_in_order() {
    use stockflow_domain::{BusEvent, LocationId, OnHandChange, Sku, StockKey};

    use crate::contract::{Exec, adjust, location, plain};
    use crate::ports::{Outbox, WriteStore};

    let (a, config) = backend_and_config("fresh_gap").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    let (a, b) = (a.write.clone(), b.write.clone());
    let key = StockKey::new(Sku::parse("g").unwrap(), LocationId::parse("x").unwrap());
    let versions = |entries: &[crate::ports::OutboxEntry]| -> Vec<u64> {
        entries
            .iter()
            .map(|e| match serde_json::from_slice(&e.payload).unwrap() {
                BusEvent::Stock(e) => e.version,
                BusEvent::Catalog(_) | BusEvent::Policy(_) => panic!("not a stock event"),
            })
            .collect()
    };
    a.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    let add = |store: Arc<ScyllaWriteStore>| async move {
        store
            .exec(plain(adjust("g", "x", OnHandChange::Delta(1), None)))
            .await
            .unwrap();
    };
    add(a.clone()).await;
    let first = a.pending(100).await.unwrap();
    assert_eq!(versions(&first), vec![1]);
    a.mark_published(&first.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    add(a.clone()).await;
    // Another writer, then this process again (its marker is fresh: it does not write it).
    add(b.clone()).await;
    add(a.clone()).await;
    let next = a.pending(100).await.unwrap();
    assert_eq!(
        versions(&next),
        vec![2, 3, 4],
        "the other writer's row is read"
    );
    a.mark_published(&next.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    add(a.clone()).await;
    let last = a.pending(100).await.unwrap();
    assert_eq!(versions(&last), vec![5]);
    a.mark_published(&last.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(a.pending(100).await.unwrap().is_empty());
    assert!(a.outbox_versions(&key).await.unwrap().is_empty());
}

/// Dead letters spread over several partitions of the table, and every one is still listed,
/// removed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_spread_over_buckets() {
    use crate::ports::{DeadLetter, ReadStore};

    let b = backend("letters").await;
    for offset in 0..40u64 {
        let letter = DeadLetter {
            id: 0,
            consumer: "c".into(),
            partition: (offset % 4) as u32,
            offset,
            key: "k".into(),
            payload: "{}".into(),
            error: "poison".into(),
            attempts: 1,
            failed_at_ms: crate::now_ms(),
        };
        b.read.dead_letter(letter, offset + 1).await.unwrap();
    }
    let nodes = std::env::var("STOCKFLOW_CQL_NODES").unwrap_or_default();
    let keyspace = format!("t_letters_{}", std::process::id());
    let session = connect(&ScyllaConfig::new(vec![nodes], keyspace.clone()))
        .await
        .unwrap();
    let buckets: Vec<(i32,)> = query::decode(
        "list buckets",
        session
            .query_unpaged(
                format!("SELECT DISTINCT bucket FROM {keyspace}.dead_letters"),
                (),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(buckets.len() > 4, "{} buckets", buckets.len());
    let letters = b.read.dead_letters(100).await.unwrap();
    assert_eq!(letters.len(), 40);
    assert!(
        letters.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    assert_eq!(b.read.dead_letter_count().await.unwrap(), 40);
    for l in &letters[..10] {
        assert!(b.read.remove_dead_letter(l.id).await.unwrap());
    }
    assert_eq!(b.read.dead_letter_count().await.unwrap(), 30);
    assert_eq!(
        b.read
            .purge_dead_letters(crate::now_ms() + 1_000, 1_000)
            .await
            .unwrap(),
        30
    );
    assert_eq!(b.read.dead_letter_count().await.unwrap(), 0);
}

mod sagas;
mod transfers;
