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
async fn scylla_moves_counts_and_a_location_policy_keep_one_event_per_change() {
    let b = backend("states").await;
    contract::states_contract(b.write.clone()).await;
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

/// Sagas abandoned half-way (their process died) are completed by expiry: a `pending` one
/// is rolled back and its id freed, a `settling` one is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_recovers_sagas_left_half_way() {
    use stockflow_domain::decide::Settlement;
    use stockflow_domain::saga::SagaState;
    use stockflow_domain::{
        Command, EventMeta, LocationGrant, LocationId, Reservation, ReservationId, ReservationLine,
        ReservationStatus, Sku, StockKey,
    };

    use crate::ports::{CommandRequest, WriteStore};

    let b = backend("recover").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    let plain = |command| CommandRequest {
        command,
        idempotency: None,
        trace_context: None,
        actor: None,
        grant: LocationGrant::Any,
    };
    let key = |s: &str| StockKey::new(Sku::parse(s).unwrap(), LocationId::parse("x1").unwrap());
    let reserved = |s: &'static str| {
        let w = w.clone();
        async move { w.stock_level(&key(s)).await.unwrap().unwrap().reserved }
    };
    w.put_location(stockflow_domain::Location {
        id: LocationId::parse("x1").unwrap(),
        region: stockflow_domain::Region::parse("north").unwrap(),
        kind: stockflow_domain::LocationKind::Store,
        name: "X1".into(),
    })
    .await
    .unwrap()
    .unwrap();
    for s in ["a", "b"] {
        let adjust = stockflow_domain::Adjust::new(
            key(s),
            stockflow_domain::OnHandChange::Delta(10),
            stockflow_domain::AdjustReason::Receipt,
            None,
            None,
        )
        .unwrap();
        w.exec(plain(Command::Adjust(adjust))).await.unwrap();
    }
    let line = |s: &str, qty| ReservationLine {
        sku: Sku::parse(s).unwrap(),
        location: LocationId::parse("x1").unwrap(),
        qty,
        backordered: 0,
    };

    // A reservation whose process died after holding its first line, 31 s ago.
    let old = crate::now_ms() - 31_000;
    let meta = EventMeta {
        actor: None,
        idempotency_key: None,
        trace_context: None,
        occurred_at_ms: old,
    };
    let crashed = Reservation {
        id: ReservationId::parse("crashed").unwrap(),
        status: ReservationStatus::Active,
        lines: vec![line("a", 2), line("b", 3)],
        reference: None,
        created_at_ms: old,
        expires_at_ms: old + 600_000,
        updated_at_ms: old,
    };
    deadlines::index_with_deadlines(&p, &crashed.id, &[key("a"), key("b")], &[], None)
        .await
        .unwrap();
    let lines = serde_json::to_string(&crashed.lines).unwrap();
    let pending = SagaState::Pending.to_string();
    let header = HeaderWrite {
        id: crashed.id.as_str(),
        status: &pending,
        owner: "k:gone",
        lines: &lines,
        reference: None,
        created_at: old,
        expires_at: crashed.expires_at_ms,
        updated_at: old,
    };
    p.session
        .execute_unpaged(&p.st.create_header, header)
        .await
        .unwrap();
    w.keys
        .apply(
            &key("a"),
            saga::reserve_step(
                &crashed,
                &crashed.lines[0],
                &LocationGrant::Any,
                i64::MAX,
                &meta,
            ),
        )
        .await
        .unwrap();
    assert_eq!(reserved("a").await, 2, "the dead saga holds its first line");
    assert!(w.reservation(&crashed.id).await.unwrap().is_none());
    let _ = w
        .exec(plain(Command::Expire {
            id: crashed.id.clone(),
        }))
        .await;
    assert_eq!((reserved("a").await, reserved("b").await), (0, 0));
    assert!(saga::header(&p, &crashed.id).await.unwrap().is_none());
    let again = stockflow_domain::Reserve::new(
        crashed.id.clone(),
        vec![
            stockflow_domain::ReserveLine {
                sku: Sku::parse("a").unwrap(),
                location: LocationId::parse("x1").unwrap(),
                qty: 1,
            },
            stockflow_domain::ReserveLine {
                sku: Sku::parse("b").unwrap(),
                location: LocationId::parse("x1").unwrap(),
                qty: 1,
            },
        ],
        600,
        None,
    )
    .unwrap();
    w.exec(plain(Command::Reserve(again)))
        .await
        .expect("the id is free again");
    assert_eq!((reserved("a").await, reserved("b").await), (1, 1));

    // A confirmation whose process died after settling one line of two.
    let half = w.reservation(&crashed.id).await.unwrap().unwrap();
    let (settling, active) = (
        SagaState::Settling(Settlement::Confirm).to_string(),
        SagaState::Active.to_string(),
    );
    let settle = HeaderMove {
        new_status: &settling,
        moved_at: old,
        id: half.id.as_str(),
        old_status: &active,
    };
    p.session
        .execute_unpaged(&p.st.move_header, settle)
        .await
        .unwrap();
    w.keys
        .apply(
            &key("a"),
            saga::settle_step(Settlement::Confirm, &half, &LocationGrant::Any, &meta),
        )
        .await
        .unwrap();
    let done = w
        .exec(plain(Command::Expire {
            id: half.id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(done.events, 1, "only the unsettled line moves");
    let status = match done.result {
        stockflow_domain::CommandResult::Reservation(r) => r.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status, ReservationStatus::Confirmed);
    for s in ["a", "b"] {
        let level = w.stock_level(&key(s)).await.unwrap().unwrap();
        assert_eq!((level.on_hand, level.reserved), (9, 0), "{s}");
    }
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

/// The deadline index lives apart from the reservations, so an expiry round tidies it: a row
/// left by a reservation that settled is removed, and a recovery row of a reservation that
/// is active again gives way to that reservation's own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_rounds_tidy_the_deadline_index() {
    use stockflow_domain::{Command, OnHandChange, ReservationId};

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("tidy").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    let rows_of = |id: &'static str| deadline_rows(&p, id);
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    w.exec(plain(adjust("t", "x", OnHandChange::Delta(10), None)))
        .await
        .unwrap();
    let settled = ReservationId::parse("settled").unwrap();
    let live = ReservationId::parse("live").unwrap();
    w.exec(plain(reserve("settled", &[("t", "x", 1)], 600)))
        .await
        .unwrap();
    w.exec(plain(Command::Confirm {
        id: settled.clone(),
    }))
    .await
    .unwrap();
    w.exec(plain(reserve("live", &[("t", "x", 1)], 600)))
        .await
        .unwrap();
    let live_deadline = w.reservation(&live).await.unwrap().unwrap().expires_at_ms;
    assert_eq!(rows_of("settled").await, Vec::<i64>::new());
    // What a crash leaves: a row whose delete was lost, and a recovery row now past.
    let now = crate::now_ms();
    deadlines::deadline(&p, &settled, now - 5_000)
        .await
        .unwrap();
    deadlines::deadline(&p, &live, now - 3_000).await.unwrap();

    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (round.expired, round.already_final, round.failed),
        (0, 1, 0),
        "{:?}",
        round.last_error
    );
    assert_eq!(round.next_deadline_ms, Some(live_deadline));
    assert_eq!(rows_of("settled").await, Vec::<i64>::new());
    assert_eq!(rows_of("live").await, vec![live_deadline]);
    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!((round.expired, round.already_final), (0, 0));
    assert_eq!(round.next_deadline_ms, Some(live_deadline));
}

/// A finished saga's header expires as a whole: were only the cells its last write set to
/// expire, the rest of the row would stay behind with no status, which reads as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_saga_header_expires_with_every_column() {
    use stockflow_domain::{Command, OnHandChange, ReservationId, ReservationStatus};

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("header_ttl").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    for sku in ["a", "b"] {
        w.exec(plain(adjust(sku, "x", OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let id = ReservationId::parse("two-lines").unwrap();
    w.exec(plain(reserve(
        "two-lines",
        &[("a", "x", 1), ("b", "x", 2)],
        600,
    )))
    .await
    .unwrap();
    assert!(
        matches!(saga::locate(&p, &id).await.unwrap(), saga::Located::Saga(_)),
        "a reservation over two keys is found through its header"
    );
    w.exec(plain(Command::Confirm { id: id.clone() }))
        .await
        .unwrap();
    let ttl_of = |column: &'static str| {
        let session = p.session.clone();
        let keyspace = format!("t_header_ttl_{}", std::process::id());
        async move {
            let rows = session
                .query_unpaged(
                    format!("SELECT TTL({column}) AS ttl FROM {keyspace}.reservations WHERE id = 'two-lines'"),
                    (),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            rows.maybe_first_row::<(Option<i32>,)>().unwrap().unwrap().0
        }
    };
    for column in [
        "status",
        "owner",
        "lines",
        "created_at",
        "expires_at",
        "updated_at",
    ] {
        let ttl = ttl_of(column).await;
        assert!(
            ttl.is_some_and(|t| t > 0 && t <= cql::write_statements::RECORD_TTL),
            "{column} of a confirmed saga carries the record TTL, found {ttl:?}"
        );
    }
    let confirmed = w.reservation(&id).await.unwrap().unwrap();
    assert_eq!(confirmed.status, ReservationStatus::Confirmed);
    assert_eq!(confirmed.lines.len(), 2);
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

/// The times of `id`'s rows in the deadline index, from two minutes ago to well ahead.
async fn deadline_rows(p: &partition::Partitions, id: &str) -> Vec<i64> {
    let now = crate::now_ms();
    let mut at = Vec::new();
    for minute in deadlines::minute_of(now - 240_000)..=deadlines::minute_of(now + 700_000) {
        let rows: Vec<DeadlineRow> = query::rows(
            &p.session,
            "scan deadlines",
            &p.st.deadlines_from,
            (minute, 0i64, 1000i32),
        )
        .await
        .unwrap();
        at.extend(
            rows.into_iter()
                .filter(|r| r.id == id)
                .map(|r| r.expires_at),
        );
    }
    at
}

/// A one-line reserve writes its deadline before its conditional batch; while the batch is
/// still retrying, expiry must not take the missing reservation for a settled one and drop
/// the row (the reservation would then land with no deadline and hold its stock forever).
/// A row whose reservation never came is dropped once no batch can still be on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_written_before_its_reservation_is_kept_until_it_lands() {
    use stockflow_domain::{
        LocationId, OnHandChange, ReservationId, ReservationStatus, Sku, StockKey,
    };

    use crate::contract::{Exec, adjust, location, plain, reserve};
    use crate::ports::WriteStore;

    let b = backend("late").await;
    let w = b.write.clone();
    let p = w.keys.partitions.clone();
    w.put_location(location("x", "north"))
        .await
        .unwrap()
        .unwrap();
    w.exec(plain(adjust("t", "x", OnHandChange::Delta(10), None)))
        .await
        .unwrap();
    let late = ReservationId::parse("late").unwrap();
    let orphan = ReservationId::parse("orphan").unwrap();
    let now = crate::now_ms();
    let key = StockKey::new(Sku::parse("t").unwrap(), LocationId::parse("x").unwrap());
    deadlines::index_with_deadlines(&p, &late, std::slice::from_ref(&key), &[now - 1_000], None)
        .await
        .unwrap();
    deadlines::deadline(&p, &orphan, now - 200_000)
        .await
        .unwrap();

    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(
        (round.expired, round.already_final, round.failed),
        (0, 1, 0),
        "only the orphan is dropped: {:?}",
        round.last_error
    );
    assert!(
        round
            .next_deadline_ms
            .is_some_and(|t| t <= crate::now_ms() + 5_000),
        "the kept row is looked at again soon: {:?}",
        round.next_deadline_ms
    );
    assert_eq!(deadline_rows(&p, "late").await, vec![now - 1_000]);
    assert_eq!(deadline_rows(&p, "orphan").await, Vec::<i64>::new());

    // The batch lands, with a one-second TTL; expiry then expires the reservation.
    w.exec(plain(reserve("late", &[("t", "x", 1)], 1)))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let round = w.expire_due(crate::now_ms(), 10).await.unwrap();
    assert_eq!(round.expired, 1, "{:?}", round.last_error);
    let held = w.reservation(&late).await.unwrap().unwrap();
    assert_eq!(held.status, ReservationStatus::Expired);
    assert_eq!(deadline_rows(&p, "late").await, Vec::<i64>::new());
    let level = w.stock_level(&key).await.unwrap().unwrap();
    assert_eq!(
        level.reserved, 0,
        "the expired reservation gave its unit back"
    );
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

/// A multi-line reservation whose saga stalls between its lines past the recovery window
/// is rolled back by expiry, and its lines and that rollback exclude each other: woken, the
/// stalled attempt holds nothing more; the client's retry (same key) makes a new, whole
/// reservation that the stale attempt never touches; a step whose lease ran out is not
/// sent; a line that lands after the header left `pending` is given back by its writer.
/// After each case, every key's `reserved` equals what active reservations hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_saga_and_its_rollback_exclude_each_other() {
    use std::time::Duration;

    use stockflow_domain::{LocationId, OnHandChange, ReservationId, Sku, StockKey};

    use crate::contract::{Exec, adjust, assert_holds_match, keyed, location, plain, reserve};
    use crate::ports::WriteStore;
    use saga::pauses::{Point, stall};

    /// The recovery window of this test's store (30 s in production).
    const WINDOW: i64 = 3_000;
    let (_, config) = backend_and_config("stall").await;
    let session = Arc::new(connect(&config).await.expect("connect"));
    let w = Arc::new(
        ScyllaWriteStore::with_recovery(session, &config.keyspace, WINDOW)
            .await
            .expect("store"),
    );
    let p = w.keys.partitions.clone();
    w.put_location(location("sx", "north"))
        .await
        .unwrap()
        .unwrap();
    w.put_location(location("sy", "south"))
        .await
        .unwrap()
        .unwrap();
    for (s, l) in [("a", "sx"), ("b", "sy")] {
        w.exec(plain(adjust(s, l, OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let key =
        |s: &str, l: &str| StockKey::new(Sku::parse(s).unwrap(), LocationId::parse(l).unwrap());
    let reserved = |s: &'static str, l: &'static str| {
        let w = w.clone();
        async move { w.stock_level(&key(s, l)).await.unwrap().unwrap().reserved }
    };
    let start = |id: &'static str, k: &'static str| {
        let w = w.clone();
        tokio::spawn(async move {
            w.execute(keyed(
                reserve(id, &[("a", "sx", 2), ("b", "sy", 3)], 600),
                k,
                k,
            ))
            .await
        })
    };
    let past_window = || tokio::time::sleep(Duration::from_millis(WINDOW as u64 + 500));
    let expire = || {
        let w = w.clone();
        async move {
            let round = w.expire_due(crate::now_ms(), 100).await.unwrap();
            assert_eq!(round.failed, 0, "{:?}", round.last_error);
        }
    };
    let unavailable = |r: crate::Result<crate::ports::Executed>, case: &str| match r {
        Err(e) if e.retryable() => {}
        other => panic!("{case}: expected a retryable failure, got {other:?}"),
    };
    let all = ["st-1", "st-2", "st-3", "st-4"];

    // 1. Stalled between its lines: expiry leaves it alone while it is within its window,
    //    then rolls it back; woken, it takes no lease and holds nothing. (Had it gone on to
    //    write its second line, its request would be cut off before its move to `active`,
    //    as the HTTP timeout drops it: nothing may stay held then either.)
    let gate = stall("st-1", Point::BeforeLease(1));
    let late = stall("st-1", Point::BeforeActive);
    let mut run = start("st-1", "k-st-1");
    gate.reached().await;
    assert_eq!(reserved("a", "sx").await, 2, "its first line is held");
    expire().await;
    assert_eq!(reserved("a", "sx").await, 2, "not idle long enough");
    past_window().await;
    expire().await;
    assert_eq!(reserved("a", "sx").await, 0, "rolled back");
    assert!(
        saga::header(&p, &ReservationId::parse("st-1").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    gate.open();
    tokio::select! {
        answer = &mut run => unavailable(answer.unwrap(), "st-1"),
        () = late.reached() => run.abort(),
    }
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (0, 0)
    );
    assert_holds_match(&*w, &all).await;

    // 2. Rolled back, then retried by the client with the same key: a new attempt, which
    //    the stale one — woken while the new one is half-way — leaves alone.
    let gate = stall("st-2", Point::BeforeLease(1));
    let stale = start("st-2", "k-st-2");
    gate.reached().await;
    past_window().await;
    expire().await;
    assert_eq!(reserved("a", "sx").await, 0, "rolled back");
    let gate_retry = stall("st-2", Point::BeforeLease(1));
    let retry = start("st-2", "k-st-2");
    gate_retry.reached().await;
    assert_eq!(
        reserved("a", "sx").await,
        2,
        "the retry holds its first line"
    );
    gate.open();
    unavailable(stale.await.unwrap(), "st-2 stale");
    assert_eq!(
        reserved("a", "sx").await,
        2,
        "the stale attempt gave back nothing of the new one"
    );
    gate_retry.open();
    let made = retry
        .await
        .unwrap()
        .expect("the retry makes the reservation");
    assert!(!made.replayed && made.answer.is_ok());
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3)
    );
    let again = w
        .exec(keyed(
            reserve("st-2", &[("a", "sx", 2), ("b", "sy", 3)], 600),
            "k-st-2",
            "k-st-2",
        ))
        .await
        .unwrap();
    assert!(again.replayed, "its answer is kept under the key");
    assert_holds_match(&*w, &all).await;

    // 3. Stalled after its second line's lease, past the window: expiry rolls it back, and
    //    the step whose lease ran out is never sent (were it sent, the request would again
    //    be cut off before its move to `active`).
    let gate = stall("st-3", Point::AfterLease(1));
    let late = stall("st-3", Point::BeforeActive);
    let mut run = start("st-3", "k-st-3");
    gate.reached().await;
    past_window().await;
    expire().await;
    gate.open();
    tokio::select! {
        answer = &mut run => unavailable(answer.unwrap(), "st-3"),
        () = late.reached() => run.abort(),
    }
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3),
        "only st-2 holds stock"
    );
    assert_holds_match(&*w, &all).await;

    // 4. Every line held, then the header leaves `pending` under it — as when a rollback
    //    looked at a partition before the last step landed there: the writer, refused its
    //    move to `active`, gives back what it holds.
    let gate = stall("st-4", Point::BeforeActive);
    let run = start("st-4", "k-st-4");
    gate.reached().await;
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (4, 6)
    );
    p.session
        .query_unpaged(
            format!(
                "DELETE FROM {}.reservations WHERE id = 'st-4'",
                config.keyspace
            ),
            (),
        )
        .await
        .unwrap();
    gate.open();
    unavailable(run.await.unwrap(), "st-4");
    assert_eq!(
        (reserved("a", "sx").await, reserved("b", "sy").await),
        (2, 3)
    );
    assert_holds_match(&*w, &all).await;
}
