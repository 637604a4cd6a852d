//! The embedded adapters run the port contracts.

use super::EmbeddedBackend;
use crate::contract;

fn backend(partitions: u32) -> (tempfile::TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), partitions).unwrap();
    (dir, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_store_honours_the_contract() {
    let (_dir, b) = backend(4);
    contract::write_store_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_store_never_oversells() {
    let (_dir, b) = backend(4);
    contract::write_store_concurrency_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_store_applies_each_command_once_under_races() {
    let (_dir, b) = backend(4);
    contract::write_store_race_contract(b.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_replay_under_their_key() {
    let (_dir, b) = backend(4);
    contract::write_store_refusal_replay_contract(b.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_reservations_never_leave_holds_behind() {
    let (_dir, b) = backend(4);
    contract::write_store_saga_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_acts_only_at_its_locations() {
    let (_dir, b) = backend(4);
    contract::write_store_location_grant_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_records_facts_below_zero_and_channels_see_zero() {
    let (_dir, b) = backend(4);
    contract::records_facts_contract(b.write.clone(), b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_models_are_rebuilt_from_the_write_side_resuming_where_a_run_stopped() {
    let (_dir, b) = backend(4);
    contract::rebuild_contract(b.write.clone(), b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_channels_never_overdraw_a_fence_or_a_cap() {
    let (_dir, b) = backend(4);
    contract::allocation_race_contract(b.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_counts_and_a_location_policy_keep_one_event_per_change() {
    let (_dir, b) = backend(4);
    contract::states_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_policy_is_one_versioned_change_every_key_then_decides_under() {
    let (_dir, b) = backend(4);
    contract::sku_policy_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_ship_all_or_nothing_and_receive_in_parts() {
    let (_dir, b) = backend(4);
    contract::transfer_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_transfers_and_sales_conserve_every_unit() {
    let (_dir, b) = backend(4);
    contract::transfer_race_contract(b.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_due_reservations_expires_once_in_bounded_rounds() {
    let (_dir, b) = backend(4);
    contract::write_store_expiry_contract(b.write.clone(), b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_honours_the_contract() {
    let (_dir, b) = backend(5);
    stockflow_bus::contract::event_log_contract(b.log.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_store_honours_the_contract() {
    let (_dir, b) = backend(1);
    contract::read_store_contract(b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_honours_the_contract_and_expires_what_retention_removed() {
    use crate::ports::{Changes, ReadStore};
    let (_dir, b) = backend(1);
    contract::change_feed_contract(b.read.clone()).await;
    let s1 = vec!["s1".to_string()];
    let before = b.read.change_snapshot(&s1).await.unwrap().cursor;
    // Retention removes everything: a cursor from before is expired, the head is not.
    assert!(b.read.purge_changes(i64::MAX, 1_000_000).await.unwrap() > 0);
    assert!(matches!(
        b.read.changes(&s1, Some("e:1"), 10).await.unwrap(),
        Changes::Expired
    ));
    assert!(matches!(
        b.read.changes(&s1, Some(&before), 10).await.unwrap(),
        Changes::Page { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_keeps_offsets_and_partition_count_across_reopen() {
    use stockflow_bus::EventLog;
    let dir = tempfile::tempdir().unwrap();
    let (ends, identity) = {
        let b = EmbeddedBackend::open(dir.path(), 3).unwrap();
        stockflow_bus::contract::event_log_contract(b.log.clone()).await;
        let mut ends = Vec::new();
        for p in 0..3 {
            ends.push(b.log.end_offset(p).await.unwrap());
        }
        (ends, b.log.identity())
    };
    assert!(ends.iter().sum::<u64>() > 300, "{ends:?}");
    let b = EmbeddedBackend::open(dir.path(), 3).unwrap();
    for (p, end) in ends.iter().enumerate() {
        assert_eq!(
            b.log.end_offset(u32::try_from(p).unwrap()).await.unwrap(),
            *end
        );
    }
    assert_eq!(b.log.identity(), identity, "a reopened log is the same log");
    drop(b);
    let other = tempfile::tempdir().unwrap();
    let fresh = EmbeddedBackend::open(other.path(), 3).unwrap();
    assert_ne!(fresh.log.identity(), identity, "a new log is another log");
    drop(fresh);
    assert!(
        EmbeddedBackend::open(dir.path(), 4).is_err(),
        "partition count is fixed"
    );
}

mod wal;

/// A failed WAL fsync fails safe: the batch it covered and every later one are refused
/// (the next fsync "succeeding" proves nothing), nothing after the failure reaches the
/// outbox the publisher reads, the store reports itself stopped for good, and a reopened
/// store (the restarted process) holds every acknowledged change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_store_and_loses_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use stockflow_domain::OnHandChange;

    use super::{FaultInjection, SqliteWriteStore, WalPolicy};

    use crate::contract::{Exec, adjust, keyed, location};
    use crate::ports::{Outbox, WriteStore};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("write.db");
    let faults = Arc::new(FaultInjection::default());
    let store =
        SqliteWriteStore::open_with_faults(&path, WalPolicy::default(), faults.clone()).unwrap();
    store
        .put_location(location("s1", "north"))
        .await
        .unwrap()
        .unwrap();
    let acknowledged = store
        .exec(keyed(
            adjust("A", "s1", OnHandChange::SetOnHand(5), None),
            "before",
            "f1",
        ))
        .await
        .unwrap();
    assert_eq!(store.fatal_error(), None);
    let published_before = store.pending(1000).await.unwrap().len();

    faults.fail_next_fsync.store(true, Ordering::Release);
    let failed = store
        .execute(keyed(
            adjust("A", "s1", OnHandChange::Delta(1), None),
            "during",
            "f2",
        ))
        .await;
    assert!(
        matches!(failed, Err(ref e) if e.retryable() && e.to_string().contains("fsync")),
        "{failed:?}"
    );
    // The injected fault is spent: a naive store would now fsync "successfully" and
    // acknowledge this one, publishing the failed batch's event with it.
    let after = store
        .execute(keyed(
            adjust("A", "s1", OnHandChange::Delta(1), None),
            "after",
            "f3",
        ))
        .await;
    assert!(matches!(after, Err(ref e) if e.retryable()), "{after:?}");
    assert!(store.fatal_error().is_some_and(|why| why.contains("fsync")));
    assert!(store.check_ready().await.is_err());
    assert_eq!(
        store.pending(1000).await.unwrap().len(),
        published_before,
        "nothing unacknowledged is offered to the publisher"
    );
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // The restarted process: the acknowledged change is there.
    let reopened = SqliteWriteStore::open(&path, WalPolicy::default()).unwrap();
    let level = reopened
        .stock_level(&stockflow_domain::StockKey::new(
            stockflow_domain::Sku::parse("A").unwrap(),
            stockflow_domain::LocationId::parse("s1").unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(level.on_hand >= 5, "{level:?}");
    assert!(acknowledged.events > 0);
    assert_eq!(reopened.fatal_error(), None);
}

/// A read database whose movement history an earlier version kept `WITHOUT ROWID` is
/// rebuilt as a rowid table when opened, every movement kept with its provenance, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_movement_history_kept_without_rowid_is_rebuilt_as_a_rowid_table() {
    use super::{SqliteReadStore, WalPolicy};
    use crate::ports::ReadStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.db");
    let earlier = rusqlite::Connection::open(&path).unwrap();
    earlier
        .execute_batch(
            "CREATE TABLE stock_movements (
                 sku TEXT NOT NULL, location TEXT NOT NULL, version INTEGER NOT NULL,
                 kind TEXT NOT NULL, on_hand INTEGER NOT NULL, reserved INTEGER NOT NULL,
                 reservation_id TEXT, reason TEXT, reference TEXT, actor_subject TEXT,
                 actor_client_id TEXT, idempotency_key TEXT, occurred_at_ms INTEGER NOT NULL,
                 bus_partition INTEGER, bus_offset INTEGER, projected_at_ms INTEGER,
                 projected_by TEXT, detail TEXT,
                 PRIMARY KEY (sku, location, version)
             ) WITHOUT ROWID;
             CREATE INDEX stock_movements_by_time ON stock_movements (occurred_at_ms);
             INSERT INTO stock_movements VALUES
                 ('a', 's1', 2, 'stock_reserved', 5, 2, 'r-1', NULL, 'order-1', 'erp', NULL,
                  'k-2', 2000, 0, 41, 2100, 'projector-0', NULL),
                 ('a', 's1', 1, 'stock_adjusted', 5, 0, NULL, 'receipt', NULL, 'erp', 'c-1',
                  'k-1', 1000, 0, 40, 1100, 'projector-0', NULL);",
        )
        .unwrap();
    drop(earlier);

    for _ in 0..2 {
        let read = SqliteReadStore::open(&path, WalPolicy::default()).unwrap();
        let history = read.movements("a", "s1", 0, 10).await.unwrap();
        let versions: Vec<u64> = history.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2], "every movement kept, in version order");
        assert_eq!(history[0].reason.as_deref(), Some("receipt"));
        assert_eq!(history[0].idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(history[1].reservation_id.as_deref(), Some("r-1"));
        let actor = history[0].actor.as_ref().expect("the actor kept");
        assert_eq!(
            (actor.subject.as_str(), actor.client_id.as_deref()),
            ("erp", Some("c-1"))
        );
        let projection = history[1].projection.as_ref().expect("the provenance kept");
        assert_eq!(
            (projection.offset, projection.projected_by.as_str()),
            (41, "projector-0")
        );
        drop(read);

        let conn = rusqlite::Connection::open(&path).unwrap();
        let tables: Vec<(String, String)> = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE name LIKE 'stock_movements%'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["stock_movements", "stock_movements_by_time"]);
        assert!(!tables[0].1.contains("WITHOUT ROWID"), "{}", tables[0].1);
        let in_time_order: Vec<i64> = conn
            .prepare("SELECT version FROM stock_movements ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(in_time_order, [1, 2], "copied oldest first");
    }
}

mod retention;
