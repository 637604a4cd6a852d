//! Transfers on ScyllaDB: the transfer contract and its race on two store instances, and
//! the saga's recovery — a shipment stalled half-way is rolled back by expiry without
//! giving anything back twice, and one stalled past its point of no return is finished.

use std::sync::Arc;
use std::time::Duration;

use stockflow_domain::{OnHandChange, TransferId, TransferStatus};

use super::*;
use crate::contract::{
    self, Exec, adjust, cancel_transfer, create_transfer, key, keyed, location, plain,
    receive_transfer, ship_transfer,
};
use crate::ports::WriteStore;
use crate::scylla::write::saga::pauses::{Point, stall};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_transfers_ship_all_or_nothing_and_receive_in_parts() {
    let b = backend("transfers").await;
    contract::transfer_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scylla_write_stores_race_transfers_and_conserve_every_unit() {
    let (a, config) = backend_and_config("transfer_race").await;
    let b = ScyllaBackend::open(&config).await.expect("second instance");
    contract::transfer_race_contract(a.write.clone(), b.write.clone()).await;
}

/// Units of `sku` wherever they are: at the source, at the destination, in transit.
async fn units(w: &ScyllaWriteStore, sku: &str) -> (i64, i64, i64) {
    let level = |l: &'static str| {
        let k = key(sku, l);
        async move { w.stock_level(&k).await.unwrap() }
    };
    let src = level("fa").await.map_or(0, |l| l.on_hand);
    let dst = level("fb").await;
    let (on_hand, in_transit) = dst.map_or((0, 0), |l| (l.on_hand, l.in_transit()));
    (src, on_hand, in_transit)
}

/// A shipment stalled between its sources past the recovery window: other requests are
/// told to retry while it may still finish; expiry rolls it back; woken, the stale attempt
/// gives back nothing more; a new shipment then goes through whole. A shipment stalled
/// after its point of no return (a crash there) is finished by expiry. Every unit is
/// accounted for after each case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_rolls_back_or_finishes_a_shipment_left_half_way() {
    /// The recovery window of this test's store (30 s in production).
    const WINDOW: i64 = 2_000;
    let (_, config) = backend_and_config("transfer_stall").await;
    let session = Arc::new(connect(&config).await.expect("connect"));
    let w = Arc::new(
        ScyllaWriteStore::with_recovery(session, &config.keyspace, WINDOW)
            .await
            .expect("store"),
    );
    for l in ["fa", "fb"] {
        w.put_location(location(l, "north")).await.unwrap().unwrap();
    }
    for s in ["x", "y"] {
        w.exec(plain(adjust(s, "fa", OnHandChange::SetOnHand(10), None)))
            .await
            .unwrap();
    }
    let status = |id: &'static str| {
        let w = w.clone();
        async move {
            let id = TransferId::parse(id).unwrap();
            w.transfer(&id).await.unwrap().unwrap().status
        }
    };
    let expire = || {
        let w = w.clone();
        async move {
            let round = w.expire_due(crate::now_ms(), 100).await.unwrap();
            assert_eq!(round.failed, 0, "{:?}", round.last_error);
        }
    };
    let past_window = || tokio::time::sleep(Duration::from_millis(WINDOW as u64 + 500));
    let start = |id: &'static str, k: &'static str| {
        let w = w.clone();
        tokio::spawn(async move { w.execute(keyed(ship_transfer(id), k, k)).await })
    };
    let retry_later = |r: crate::Result<crate::ports::Executed>, case: &str| match r {
        Err(e) if e.retryable() => {}
        other => panic!("{case}: expected a retryable failure, got {other:?}"),
    };
    w.exec(plain(create_transfer(
        "f-1",
        "fa",
        "fb",
        &[("x", 4), ("y", 3)],
    )))
    .await
    .unwrap();

    // 1. Stalled after its first source: the units are out, nothing is in transit yet.
    let gate = stall("f-1", Point::BeforeLease(1));
    let stale = start("f-1", "k-ship-1");
    gate.reached().await;
    assert_eq!(units(&w, "x").await, (6, 0, 0));
    assert_eq!(
        status("f-1").await,
        TransferStatus::Created,
        "may still fail"
    );
    retry_later(
        w.execute(plain(ship_transfer("f-1"))).await,
        "a second shipment while the first may finish",
    );
    retry_later(
        w.execute(plain(cancel_transfer("f-1"))).await,
        "a cancel while the shipment may finish",
    );
    expire().await;
    assert_eq!(units(&w, "x").await, (6, 0, 0), "not idle long enough");
    past_window().await;
    expire().await;
    assert_eq!(units(&w, "x").await, (10, 0, 0), "rolled back");
    assert_eq!(status("f-1").await, TransferStatus::Created);
    gate.open();
    retry_later(stale.await.unwrap(), "the stale attempt");
    assert_eq!(
        (units(&w, "x").await, units(&w, "y").await),
        ((10, 0, 0), (10, 0, 0)),
        "the stale attempt gave nothing back twice and took nothing more"
    );

    // 2. A new shipment goes through whole; its retry under the same key replays.
    let shipped = w
        .exec(keyed(ship_transfer("f-1"), "k-ship-2", "k-ship-2"))
        .await
        .expect("shipped");
    assert_eq!(
        shipped.events, 4,
        "two sources out, two destinations in transit"
    );
    assert_eq!(
        (units(&w, "x").await, units(&w, "y").await),
        ((6, 0, 4), (7, 0, 3))
    );
    let again = w
        .exec(keyed(ship_transfer("f-1"), "k-ship-2", "k-ship-2"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(units(&w, "x").await, (6, 0, 4));

    // 3. A crash past the point of no return: every source out, the header `delivering`,
    //    no destination told. Clients see it in transit; expiry tells the destinations.
    w.exec(plain(create_transfer(
        "f-2",
        "fa",
        "fb",
        &[("x", 1), ("y", 2)],
    )))
    .await
    .unwrap();
    let gate = stall("f-2", Point::Delivering);
    let crashed = start("f-2", "k-ship-3");
    gate.reached().await;
    crashed.abort();
    assert_eq!(status("f-2").await, TransferStatus::InTransit);
    assert_eq!(
        units(&w, "y").await,
        (5, 0, 3),
        "out of the source, not yet told"
    );
    past_window().await;
    expire().await;
    assert_eq!(
        (units(&w, "x").await, units(&w, "y").await),
        ((5, 0, 5), (5, 0, 5))
    );
    w.exec(plain(receive_transfer(
        "f-2",
        &[("x", 1, 0), ("y", 2, 0)],
        false,
    )))
    .await
    .expect("received");
    assert_eq!(status("f-2").await, TransferStatus::Received);
    assert_eq!(
        (units(&w, "x").await, units(&w, "y").await),
        ((5, 1, 4), (5, 2, 3))
    );
    let cancelled = w.exec(plain(cancel_transfer("f-2"))).await;
    assert!(
        matches!(
            cancelled,
            Err(stockflow_domain::Refusal::TransferStatusConflict { .. })
        ),
        "{cancelled:?}"
    );

    // 4. A run stalled before `delivering` whose request is retried once its claim went
    //    stale: the retry finishes the same attempt, a receipt follows, and the stale run,
    //    woken, finds its shipment standing and gives nothing back.
    w.exec(plain(create_transfer(
        "f-3",
        "fa",
        "fb",
        &[("x", 1), ("y", 1)],
    )))
    .await
    .unwrap();
    let gate = stall("f-3", Point::BeforeActive);
    let stale = start("f-3", "k-ship-4");
    gate.reached().await;
    past_window().await;
    let retried = w
        .exec(keyed(ship_transfer("f-3"), "k-ship-4", "k-ship-4"))
        .await
        .expect("the retry finishes the shipment");
    assert!(!retried.replayed);
    w.exec(plain(receive_transfer(
        "f-3",
        &[("x", 1, 0), ("y", 1, 0)],
        false,
    )))
    .await
    .expect("received");
    gate.open();
    let woken = stale.await.unwrap().expect("the store answers");
    assert!(woken.answer.is_ok(), "{woken:?}");
    for sku in ["x", "y"] {
        let (src, on_hand, in_transit) = units(&w, sku).await;
        assert_eq!(src + on_hand + in_transit, 10, "{sku}: every unit once");
    }
    assert_eq!(
        (units(&w, "x").await, units(&w, "y").await),
        ((4, 2, 4), (4, 3, 3))
    );

    // 5. Answers lost with their idempotency records (the claim's last write failed, or
    //    the process died after the saga and before it): the retries find their commands
    //    done, after other receipts moved the transfer on, and answer again instead of
    //    applying twice or refusing their own shipment.
    let forget_keys = || {
        let w = w.clone();
        let keyspace = config.keyspace.clone();
        async move {
            let session = &w.keys.partitions.session;
            let truncate = format!("TRUNCATE {keyspace}.idempotency");
            session.query_unpaged(truncate, ()).await.unwrap();
        }
    };
    w.exec(plain(create_transfer("f-4", "fa", "fb", &[("x", 3)])))
        .await
        .unwrap();
    let ship_4 = || keyed(ship_transfer("f-4"), "k-ship-5", "k-ship-5");
    let receive_1 = || {
        keyed(
            receive_transfer("f-4", &[("x", 1, 0)], false),
            "k-rcv-1",
            "k-rcv-1",
        )
    };
    w.exec(ship_4()).await.expect("shipped");
    forget_keys().await;
    w.exec(receive_1()).await.expect("received once");
    forget_keys().await;
    w.exec(keyed(
        receive_transfer("f-4", &[("x", 1, 0)], false),
        "k-rcv-2",
        "k-rcv-2",
    ))
    .await
    .expect("received again, by another request");
    let before = units(&w, "x").await;
    assert_eq!(before, (1, 4, 5));
    let again = w
        .exec(receive_1())
        .await
        .expect("the first receipt answers again");
    assert!(!again.replayed && again.events == 0, "{again:?}");
    let again = w.exec(ship_4()).await.expect("the shipment answers again");
    assert_eq!(again.events, 0);
    assert_eq!(units(&w, "x").await, before, "nothing applied twice");
}
