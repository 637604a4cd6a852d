//! Retention keeps every growing table bounded: old rows go in small batches, recent ones
//! and everything still needed stay.

use std::time::Duration;

use rusqlite::params;
use stockflow_bus::{EventLog, NewRecord};
use stockflow_domain::{Command, OnHandChange, ReservationId};

use super::super::EmbeddedBackend;
use crate::contract::{Exec, adjust, keyed, location, reserve};
use crate::now_ms;
use crate::ports::{Purge, WriteStore};

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn purge_all(write: &dyn WriteStore, what: Purge, before: i64) -> (usize, usize) {
    let (mut removed, mut batches) = (0, 0);
    loop {
        let n = write.purge(what, before, 1000).await.unwrap();
        assert!(n <= 1000, "a batch removed {n} rows");
        removed += n;
        batches += 1;
        if n < 1000 {
            return (removed, batches);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_old_records_shrink_to_what_is_recent() {
    let dir = tempfile::tempdir().unwrap();
    let b = EmbeddedBackend::open(dir.path(), 4).unwrap();
    b.write
        .put_location(location("s1", "north"))
        .await
        .unwrap()
        .unwrap();
    let run = |command: Command, k: &str| b.write.exec(keyed(command, k, k));
    run(
        adjust("sku-r", "s1", OnHandChange::Delta(100), None),
        "stock-1",
    )
    .await
    .unwrap();
    run(
        reserve("recent-final", &[("sku-r", "s1", 1)], 600),
        "recent-1",
    )
    .await
    .unwrap();
    let confirm = || Command::Confirm {
        id: ReservationId::parse("recent-final").unwrap(),
    };
    run(confirm(), "recent-2").await.unwrap();
    run(
        reserve("recent-active", &[("sku-r", "s1", 1)], 600),
        "recent-3",
    )
    .await
    .unwrap();

    // Two days of history, written behind the store's back.
    let old = now_ms() - 2 * DAY_MS;
    {
        let mut conn = rusqlite::Connection::open(dir.path().join("write.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut idem = tx
                .prepare("INSERT INTO idempotency (key, fingerprint, result, created_at_ms) VALUES (?1, 'f', '{}', ?2)")
                .unwrap();
            for i in 0..1_000_000i64 {
                idem.execute(params![format!("old-{i}"), old + i % 1000])
                    .unwrap();
            }
            let mut res = tx
                .prepare("INSERT INTO reservations (id, status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms) VALUES (?1, ?2, NULL, '[]', ?3, ?3, ?3)")
                .unwrap();
            for i in 0..200_000i64 {
                let status = ["confirmed", "released", "expired"][(i % 3) as usize];
                res.execute(params![format!("old-r-{i}"), status, old])
                    .unwrap();
            }
            for i in 0..100i64 {
                res.execute(params![format!("old-active-{i}"), "active", old])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    let before = now_ms() - DAY_MS;
    let (removed, batches) = purge_all(&*b.write, Purge::IdempotencyRecords, before).await;
    assert_eq!((removed, batches), (1_000_000, 1001));
    let (removed, _) = purge_all(&*b.write, Purge::FinalReservations, before).await;
    assert_eq!(removed, 200_000);

    let held: std::collections::BTreeMap<_, _> =
        b.write.retained().await.unwrap().into_iter().collect();
    assert_eq!(held["idempotency"], 4, "the recent keys stay");
    assert_eq!(held["final_reservations"], 1, "the recent final one stays");
    let active_old = b
        .write
        .reservation(&ReservationId::parse("old-active-7").unwrap())
        .await
        .unwrap();
    assert!(
        active_old.is_some(),
        "an active reservation is never purged"
    );
    let replay = run(confirm(), "recent-2").await.unwrap();
    assert!(replay.replayed, "a recent key still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_what_a_consumer_still_needs_and_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = EmbeddedBackend::open(dir.path(), 1).unwrap();
    let records: Vec<NewRecord> = (0..10)
        .map(|i| NewRecord::new("k", format!("v{i}").into_bytes()))
        .collect();
    b.log.append(records).await.unwrap();
    let future = now_ms() + 1000;

    // Too recent: nothing goes.
    assert_eq!(b.log.purge(0, 6, now_ms() - DAY_MS, 100).unwrap(), 0);
    // Below the consumer's offset only, in batches.
    assert_eq!(b.log.purge(0, 6, future, 4).unwrap(), 4);
    assert_eq!(b.log.purge(0, 6, future, 4).unwrap(), 2);
    assert_eq!(b.log.purge(0, 6, future, 4).unwrap(), 0);
    assert_eq!(b.log.start_offset(0).await.unwrap(), 6);
    let fetched = b.log.fetch(0, 6, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(fetched.first().map(|r| r.offset), Some(6));
    // Everything consumed: the last record stays, so the next offset never goes back.
    assert_eq!(b.log.purge(0, u64::MAX, future, 100).unwrap(), 3);
    assert_eq!(b.log.record_count().await.unwrap(), 1);
    drop(b);
    let b = EmbeddedBackend::open(dir.path(), 1).unwrap();
    let appended = b
        .log
        .append(vec![NewRecord::new("k", b"v10".to_vec())])
        .await
        .unwrap();
    assert_eq!(appended, vec![(0, 10)]);
}
